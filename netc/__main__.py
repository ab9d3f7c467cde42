try:  # Ctrl-C before main() is in place: the same quiet status 130 main() gives
    from .cli import main
except KeyboardInterrupt:
    raise SystemExit(130) from None

raise SystemExit(main())
