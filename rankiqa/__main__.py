"""``python -m rankiqa ...``: the CLI, as `rankiqa launch` starts its workers."""

from rankiqa.cli import main

if __name__ == "__main__":
    main(prog_name="rankiqa")
