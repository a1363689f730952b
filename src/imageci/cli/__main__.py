from imageci.cli.main import entry

entry()
