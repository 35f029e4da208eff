from proxy.cli import main

if __name__ == "__main__":  # guarded: spawned workers import this module too
    raise SystemExit(main())
