#!/usr/bin/env python3
"""Runs every fixtures_*.py beside this file with the same arguments."""
import pathlib, subprocess, sys
here = pathlib.Path(__file__).resolve().parent
for script in sorted(here.glob("fixtures_*.py")):
    subprocess.run([sys.executable, str(script)] + sys.argv[1:], check=True)
