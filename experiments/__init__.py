"""One module per reproduced paper. A module is an experiment when it defines:

    Config   a dataclass; every field has a default and a docstring (the CLI is built from it)
    run(cfg, run_dir, quiet) -> dict   the results, with a `claims` list (see interp.runs.claim)
    PAPER    the paper(s) it reproduces;  CLAIMS  one line per claim, for `interp list`
    QUICK    config overrides for `--quick` (the budget the tests use)

Each module is registered in pyproject.toml (entry-point group `interp.experiments`); `interp.registry`
finds them there, never by this package's name, so another package registers its own the same way.
"""
