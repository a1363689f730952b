from imageci.cli.start import main

main()
