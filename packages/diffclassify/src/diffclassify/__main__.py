"""``python -m diffclassify`` (and ``accelerate launch -m diffclassify``) runs the CLI."""

from diffclassify.cli import main

if __name__ == "__main__":
    main()
