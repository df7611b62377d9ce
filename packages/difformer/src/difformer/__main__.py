"""``python -m difformer`` (and ``accelerate launch -m difformer`` / ``torchrun -m difformer``) runs the CLI."""

from difformer.cli import main

if __name__ == "__main__":
    main()
