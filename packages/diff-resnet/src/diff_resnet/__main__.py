"""``python -m diff_resnet`` (and ``accelerate launch -m diff_resnet``) runs the CLI."""

from diff_resnet.cli import main

if __name__ == "__main__":
    main()
