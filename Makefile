# The two commands: `make app` and `make test`. Both set everything up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geocore-installed
# Leaflet for the app's maps, served from disk (inlined into each map): no CDN at run time.
VENDOR  := app/static/vendor
LEAFLET := $(VENDOR)/node_modules/leaflet/dist/leaflet.js

.PHONY: setup test app bench clean

setup: $(STAMP) $(LEAFLET)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

$(LEAFLET):
	npm install --silent --no-audit --no-fund --prefix $(VENDOR) leaflet@1.9.4 \
		|| echo "npm unavailable: the app's maps will ask for 'make setup' until Leaflet is installed"

test: setup
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium unavailable: browser tests will be skipped"
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

app: setup
	MALLOC_ARENA_MAX=2 $(VENV)/bin/streamlit run app/Home.py  # fewer malloc arenas: flat memory under load

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
