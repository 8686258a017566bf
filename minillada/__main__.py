from minillada.cli import main

raise SystemExit(main())
