from seqbridge.cli import main

main(prog_name="seqbridge")
