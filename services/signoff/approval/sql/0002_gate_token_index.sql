-- A decision that names its gate by pipeline / stage / action finds it by token: one index probe however many
-- gates of that action are pending (a monorepo release opens thousands of gates on the same step).
CREATE INDEX gates_token ON "{schema}".gates (token);
