"""``python -m dianet`` (and ``accelerate launch -m dianet``) runs the CLI."""

from dianet.cli import main

if __name__ == "__main__":
    main()
