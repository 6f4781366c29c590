from colorfilter.cli import main

main()
