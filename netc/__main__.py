"""`python -m netc` and the `netc` command (pyproject's entry point): netc.cli loaded inside a
guard, so that Ctrl-C while it imports gives the same quiet status 130 main() gives."""


def main() -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
