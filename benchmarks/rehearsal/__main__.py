from benchmarks.rehearsal.run import main

raise SystemExit(main())
