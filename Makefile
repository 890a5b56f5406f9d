# The two set-up commands of the README: `make demo` and `make test`.
BIN := .venv/bin

.PHONY: install geotessera-clients demo test test-slow bench bench-preprocess bench-train pretrain-tiny evaluate clean

install: .venv/.installed

.venv/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $@

# The real geotessera clients (0.7.5, and 0.11.0 when a Python 3.12 is found) that the
# interoperability tests run against, each in its own venv.
geotessera-clients: .venv-geotessera/.installed

.venv-geotessera/.installed: scripts/install_geotessera.sh
	bash scripts/install_geotessera.sh
	touch $@

demo: install
	$(BIN)/tessera demo demo_out

test: install geotessera-clients
	$(BIN)/ruff check tessera tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python bench/infer.py

bench-preprocess: install
	$(BIN)/python bench/preprocess.py

bench-train: install
	$(BIN)/python bench/train.py

# Reproduce the shipped weights (needs ../shared/datasets) and score them.
pretrain-tiny: install
	$(BIN)/python scripts/pretrain_tiny.py --work pretrain_work --install

evaluate: install
	$(BIN)/python scripts/eval_worldcereal.py --out eval_out

clean:
	rm -rf .venv .venv-geotessera demo_out .pytest_cache
