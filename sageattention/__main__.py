"""`python -m sageattention doctor [--json]` (sageattention/doctor.py)."""
import sys

USAGE = "usage: python -m sageattention doctor [--json] [--manifest URL|FILE] [--no-manifest] [--no-self-test]"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "doctor":
        print(f"python -m sageattention: unknown command {argv[0]!r}; {USAGE}", file=sys.stderr)
        return 2
    from . import doctor

    return doctor.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
