"""The loop zoo: users' own training loops with a :class:`gatrank.Monitor` in them, each loop bug
of a public report beside healthy loops (:mod:`gatrank.loops.zoo`), and running them into the
table of docs/doctor.md (:mod:`gatrank.loops.table`). It sits above the Monitor in the data
flow (docs/architecture.md), as the Lightning integration does."""
