"""``carrack-stack run`` starts the system; ``carrack-stack test [pytest args]`` runs the tests."""

import sys

from . import supervisor

USAGE = "usage: carrack-stack run | carrack-stack test [pytest arguments]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["run"] and len(args) == 1:
        return supervisor.run()
    if args[:1] == ["test"]:
        return supervisor.test(args[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
