"""``python -m lessons_pkg.data export DIR``: the command lives in
:mod:`lessons_pkg.commands.data_export`; this name keeps the command line (``make data``)."""
if __name__ == "__main__":
    from lessons_pkg.commands.data_export import main
    main()
