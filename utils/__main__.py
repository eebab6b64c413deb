"""`python -m utils`: the same command line as `tbuilder`."""

from utils.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
