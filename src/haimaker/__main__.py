from haimaker.cli import main

main()
