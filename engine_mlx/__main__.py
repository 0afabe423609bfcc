import sys

from engine_mlx.cli import main

sys.exit(main())
