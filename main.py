"""SpatialAvatar-0 command line. `python main.py --help` lists the commands."""
from spatialavatar_app.cli import main

if __name__ == "__main__":
    main()
