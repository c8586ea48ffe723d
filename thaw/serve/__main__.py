from thaw.serve.cli import main

main()
