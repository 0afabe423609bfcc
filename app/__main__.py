"""``python -m app``: start QwenDesk (``--self-test`` runs the packaged self-test instead)."""

import sys


def _entry() -> int:
    if "--self-test" in sys.argv[1:]:
        from app import selftest  # written separately; imported only when asked for

        return int(selftest.run() or 0)
    from app.main import main

    return main()


if __name__ == "__main__":
    sys.exit(_entry())
