"""`python -m kagglekit` runs the command line."""

from kagglekit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
