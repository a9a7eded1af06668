from signoff.cli.main import main

main()
