"""The `unet` head: a small UNet on embedding patches, for dense segmentation and regression.

    head = make_head("unet", classes=["other", "water"], model="tessera-v1", epochs=30)
    head.fit_patches(X, Y)              # X (N, D, H, W) float32, Y (N, H, W) int, -1 = no label
    head.predict_patches(X2)            # (N, H, W) int64 class indices (float32: regression)
    head.predict_proba_patches(X2)      # (N, C, H, W) float32

The network has two levels: D -> c -> (pool) 2c -> (pool) 2c -> (up) c -> (up) c -> C, each
step two 3x3 convolutions with BatchNorm and ReLU, skip connections at both levels, c =
`channels` (default 32). Patches of any height and width are padded (edge values; the padding is
no label) to a multiple of 4 of at least 8, and the outputs are cropped back. Inputs are
standardised per embedding dimension with the training mean / std (stored with the head).
Regression targets: float, NaN = no label, MSE on standardised targets. Patches with NaN / inf
embeddings are refused (fill or mask them first). Training is deterministic for a given seed (see
`tessera.downstream.heads`). The pixel-array methods `fit` / `predict` / `predict_proba` raise a
HeadError: a UNet needs the neighbourhood of each pixel.

Maps: `predict_dense(X)` takes raster windows (N, H, W, D) with NaN where there is no embedding
(those pixels take the training mean, which standardises to 0: no information to their
neighbours). An output pixel depends on inputs up to 23 px away (the receptive field of the two
levels), so a window with CONTEXT px more on each side, starting on a multiple of 4 (the pooling
grid), gives the same outputs as the whole raster: `tessera.downstream.predict_map` stitches
such windows to map a raster of any size in bounded memory.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tessera.downstream.heads import (Head, TorchHead, check_finite_rows,
                                      float_array, standardiser, torch_session)
from tessera.errors import HeadError
from tessera.progress import Progress


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Two-level UNet: (N, D, H, W) -> (N, n_out, H, W); H and W multiples of 4."""

    def __init__(self, in_ch: int, n_out: int, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.enc1 = _block(in_ch, c)
        self.enc2 = _block(c, 2 * c)
        self.bottom = _block(2 * c, 2 * c)
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, stride=2)
        self.dec2 = _block(4 * c, c)
        self.up1 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.dec1 = _block(2 * c, c)
        self.out = nn.Conv2d(c, n_out, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        out: torch.Tensor = self.out(d1)
        return out


#: Pixels of context on each side of a window that its outputs depend on: the receptive field
#: reaches 23 px (two 3x3 convolutions at full, half and quarter resolution, and back), rounded
#: up to a multiple of 4 so that windows keep the pooling grid.
CONTEXT = 24


def padded_size(n: int) -> int:
    """The padded height / width: a multiple of 4, at least 8."""
    return max(8, -(-n // 4) * 4)


class UNetHead(TorchHead):
    """Dense segmentation / regression on (N, D, H, W) embedding patches."""

    #: what `predict_map` reads: windows need this many pixels of context on each side
    context: ClassVar[int] = CONTEXT

    def _network(self) -> nn.Module:
        return UNet(self.info.dims, self.n_out, int(self.info.params["channels"]))

    # -- pixel arrays: not for a UNet -----------------------------------------------------------

    def _no_pixels(self, method: str) -> HeadError:
        return HeadError(f"unet head {self.name}: {method} takes pixel arrays (N, D); a UNet needs "
                         f"patches: use {method}_patches with (N, D, H, W) arrays")

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None) -> Head:
        raise self._no_pixels("fit")

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise self._no_pixels("predict")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise self._no_pixels("predict_proba")

    # -- patches --------------------------------------------------------------------------------

    def _patches(self, X: Any, fitting: bool = False) -> np.ndarray:
        if not fitting:
            self._need_fitted()
        want = 0 if fitting and self.info.bands is not None else self.input_dims
        x = float_array(X, "X", 4, f"(patches, {want or 'dims'}, height, width) of embeddings")
        self._check_width(x.shape[1], want, "X", "embedding dims (axis 1)")
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise HeadError(f"X: patches of no pixel (shape {x.shape})")
        check_finite_rows(x, "X", "patches")
        return x

    def _standardised(self, x: np.ndarray) -> torch.Tensor:
        """Band-selected, standardised and padded patches as a tensor."""
        xs = self._select(x, axis=1)
        xs = (xs - self.stats["x_mean"][None, :, None, None]) / self.stats["x_std"][None, :, None, None]
        h, w = xs.shape[2:]
        t = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
        ph, pw = padded_size(h) - h, padded_size(w) - w
        if ph or pw:
            t = nn.functional.pad(t, (0, pw, 0, ph), mode="replicate")
        return t

    def fit_patches(self, X: np.ndarray, Y: np.ndarray, *, progress: Progress | None = None
                    ) -> UNetHead:
        """Train on patches X (N, D, H, W) float32 and labels Y (N, H, W): class indices with -1
        = no label, or float targets with NaN = no label. Returns the head."""
        x = self._patches(X, fitting=True)
        n, _, h, w = x.shape
        t = self._targets(Y, n, "Y", ignore=True)
        if t.shape != (n, h, w):
            raise HeadError(f"Y: expected shape {(n, h, w)} (patches, height, width) to match X; "
                            f"got {t.shape}")
        self._start_fit(x, t)
        labelled = int((t >= 0).sum() if self.is_classifier else np.isfinite(t).sum())
        self.info.extra["n_patches"] = int(n)
        if self._constant < 0:
            self._fit_patches(x, t, progress)
        self._end_fit(labelled)
        return self

    def _fit_patches(self, x: np.ndarray, t: np.ndarray, progress: Progress | None) -> None:
        xs = self._select(x, axis=1)
        mean, std = standardiser(xs, (0, 2, 3))
        self.stats = {"x_mean": mean, "x_std": std}
        self._target_stats(t)
        n, _, h, w = x.shape
        hp, wp = padded_size(h), padded_size(w)
        dev = self._device()
        xt = self._standardised(x).to(dev)
        if self.is_classifier:
            yp = np.full((n, hp, wp), -1, np.int64)
            yp[:, :h, :w] = t
            yt = torch.from_numpy(yp).to(dev)
        else:
            yp32 = np.full((n, hp, wp), np.nan, np.float32)
            yp32[:, :h, :w] = (t - self.stats["y_mean"][0]) / self.stats["y_std"][0]
            yt = torch.from_numpy(yp32).to(dev)
        def loss_of(out: Any, target: Any) -> tuple[Any, int]:
            """The mean loss over the batch's labelled pixels (-1 / NaN: none)."""
            if self.is_classifier:
                count = (target >= 0).sum()
                loss = nn.functional.cross_entropy(out, target, ignore_index=-1,
                                                   reduction="sum")
            else:
                mask = torch.isfinite(target)
                count = mask.sum()
                diff = torch.where(mask, out[:, 0] - torch.nan_to_num(target), 0.0)
                loss = (diff * diff).sum()
            return loss / count.clamp(min=1), int(count)

        self.net = self._train(xt, yt, n, loss_of, progress)

    def _run_patches(self, x: np.ndarray) -> np.ndarray:
        """(N, n_out, H, W) network outputs (softmax for classification), in batches."""
        net = self.net
        assert net is not None
        h, w = x.shape[2:]
        dev = self._device()
        net.to(dev)
        step = int(self.info.params.get("predict_batch", 8))
        out = np.empty((len(x), self.n_out, h, w), np.float32)
        with torch_session(self._threads()), torch.no_grad():
            for i in range(0, len(x), step):
                o = net(self._standardised(x[i:i + step]).to(dev))[:, :, :h, :w]
                if self.is_classifier:
                    o = torch.softmax(o, dim=1)
                out[i:i + step] = o.cpu().numpy()
        return out

    def predict_proba_patches(self, X: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 class probabilities of patches X (N, D, H, W)."""
        self._need_classifier()
        x = self._patches(X)
        if self._constant >= 0:
            n, _, h, w = x.shape
            out = np.zeros((n, self.n_classes, h, w), np.float32)
            out[:, self._constant] = 1.0
            return out
        return self._run_patches(x)

    def fill_values(self, width: int) -> np.ndarray:
        """float32 (width,): what stands in for a missing embedding at the head's input width:
        the training mean at the dimensions it reads (standardised: 0), 0 elsewhere."""
        fill = np.zeros(width, np.float32)
        if "x_mean" in self.stats:
            idx = np.arange(width) if self.info.bands is None else np.asarray(self.info.bands)
            fill[idx] = self.stats["x_mean"]
        return fill

    def predict_dense(self, X: np.ndarray) -> np.ndarray:
        """Raster windows X (N, H, W, D) float32 at the head's input width, NaN = no embedding:
        (N, C, H, W) float32 class probabilities, or (N, 1, H, W) values for regression. Missing
        embeddings take `fill_values` (their own outputs mean nothing: the caller masks them)."""
        self._need_fitted()
        x = float_array(X, "X", 4, "(windows, height, width, dims) of embeddings")
        self._check_width(x.shape[3], self.input_dims, "X", "embedding dims (axis 3)")
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise HeadError(f"X: windows of no pixel (shape {x.shape})")
        if np.isinf(x).any():
            raise HeadError("X: inf embeddings; expected finite values or NaN (= no embedding)")
        n, h, w, d = x.shape
        if self._constant >= 0:
            out = np.zeros((n, self.n_classes, h, w), np.float32)
            out[:, self._constant] = 1.0
            return out
        x = np.moveaxis(x, 3, 1)
        missing = np.isnan(x)
        if missing.any():
            x = np.where(missing, self.fill_values(d)[None, :, None, None], x)
        res = self._run_patches(np.ascontiguousarray(x, dtype=np.float32))
        return res if self.is_classifier else self._unscale(res)

    def predict_patches(self, X: np.ndarray) -> np.ndarray:
        """(N, H, W) int64 class indices, or float32 values for a regression head."""
        if self.is_classifier:
            return self.predict_proba_patches(X).argmax(axis=1).astype(np.int64)
        x = self._patches(X)
        return self._unscale(self._run_patches(x)[:, 0])


__all__ = ["CONTEXT", "UNet", "UNetHead", "padded_size"]
