"""Entry point of the frozen QwenDesk executable (PyInstaller's script; see qwendesk.spec).

``QwenDesk --self-test`` runs the self-test directly (the one thing the bundle must do without the
GUI); anything else starts the app exactly as ``python -m app`` does.
"""

import os
import sys


def main() -> int:
    # Never reach for the network at run time; models are local folders. (Also set by the runtime hook;
    # repeated here so running this file unfrozen behaves the same.)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if "--self-test" in sys.argv[1:]:
        from app.selftest import run

        return run(sys.argv[1:])
    import runpy

    runpy.run_module("app", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
