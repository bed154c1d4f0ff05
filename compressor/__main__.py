"""``python -m compressor`` runs the command line."""

from compressor.cli import main

if __name__ == "__main__":
    main()
