from faceanon.cli import app

app(prog_name="faceanon")
