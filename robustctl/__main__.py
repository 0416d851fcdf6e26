from robustctl.cli import main

main()
