from bizproxy.cli import main

raise SystemExit(main())
