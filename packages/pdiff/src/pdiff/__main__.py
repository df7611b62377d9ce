"""``python -m pdiff`` (and ``accelerate launch -m pdiff``) runs the CLI."""

from pdiff.cli import main

if __name__ == "__main__":
    main()
