from imageci.cli.main import app

app(prog_name="imageci")
