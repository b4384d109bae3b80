from bench.compare import main

raise SystemExit(main())
