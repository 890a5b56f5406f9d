"""Plot a run's metrics.csv (loss terms, probe, effective rank) to a PNG.

    .venv/bin/python scripts/plot_training.py RUN_DIR/metrics.csv docs/tiny_pretraining.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot(csv_path: str, png_path: str) -> None:
    df = pd.read_csv(csv_path)
    loss = df.dropna(subset=["loss"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.plot(loss["step"], loss["bt"], label="Barlow Twins")
    ax.plot(loss["step"], loss["mix"], label="mix term")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.legend()
    if "qat" in loss and (loss["qat"] == 1).any():
        ax.axvline(loss.loc[loss["qat"] == 1, "step"].min(), color="grey", ls=":", label="QAT")
    ax = axes[1]
    ax.plot(loss["step"], loss["rankme_r"], label="representation (128-d)")
    ax.plot(loss["step"], loss["rankme_z"], label="projector output")
    ax.set_xlabel("step")
    ax.set_title("RankMe effective rank")
    ax.legend()
    ax = axes[2]
    probe = df.dropna(subset=["probe"])
    ax.plot(probe["step"], probe["probe"], marker="o")
    ax.set_xlabel("step")
    ax.set_title("linear probe accuracy (held-out table)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
