from ddncodec.cli import main

main(prog_name="ddncodec")
