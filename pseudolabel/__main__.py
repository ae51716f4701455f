from pseudolabel.cli import main

main()
