from labctl.cli import app

app(prog_name="labctl")
