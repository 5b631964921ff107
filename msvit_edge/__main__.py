from msvit_edge.cli.app import main

main()
