"""Planning, inside routing: history recorded from routing's own facts, a forecast, Erlang C staffing, and what-if
simulations that decide through routing's own domain functions (see services/routing/README.md, Planning)."""
