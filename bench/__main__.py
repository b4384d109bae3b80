from bench.harness_vs_plain_ort import main

raise SystemExit(main())
