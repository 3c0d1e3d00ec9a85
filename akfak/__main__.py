"""`python -m akfak [--reload] [twistd akfak options]`: run the broker in the foreground.

With --reload the broker restarts whenever one of its source files changes
(hupper watches every imported module), for development.
"""

from __future__ import annotations

import sys


def run_broker(argv: list[str] | None = None) -> None:
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "akfak", *args]
    run()


def _reloaded_worker() -> None:
    run_broker()


def main() -> None:
    if "--reload" in sys.argv[1:]:
        sys.argv.remove("--reload")
        import hupper

        reloader = hupper.start_reloader("akfak.__main__._reloaded_worker")
        reloader.watch_files(["pyproject.toml"])
        return
    run_broker()


if __name__ == "__main__":
    main()
