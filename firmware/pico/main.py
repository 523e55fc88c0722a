# Boot entry point on the Pico W: runs the node from config.json (see app.py).
import app

app.main()
