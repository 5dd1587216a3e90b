from bigimg.cli import main

main()
