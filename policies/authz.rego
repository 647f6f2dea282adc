# Reference policy of agent-gateway (policy contract version 1).
#
# The gateway queries data.agent_gateway.authz.decision with the input document described in
# policies/README.md and expects the decision document described there. Rego v1 syntax: the
# same file runs unchanged on an OPA 1.x server and in the embedded engine (regorus).
#
# Structure: `grant` is the only rule that can allow. It has one body per action holding every
# condition of that action, and its value is what a permitted request gets (scopes, whether a
# human must approve). `decision` is the allowed document when the contract version is known,
# the agent is authenticated and `grant` matches, and the refused document otherwise. `deny`
# explains refusals: each reason names one failed condition of `decision` or `grant`, so a
# missing or mistyped field can only ever deny, and only refused requests pay for the
# explanations. The conditions are therefore written twice, once positively in `grant` and
# once as reasons; gateway-opa's tests check over a grid of inputs that a request is allowed
# exactly when it has no reason, and the unit tests pin every reason.
#
# Cost: the policy sits on every request's path. In regorus every rule evaluated costs about
# as much as a few builtin calls, so the allowed path evaluates few rules (`grant` inlines its
# checks) and uses string builtins rather than regexes (measured with
# `cargo bench --bench policy`).
package agent_gateway.authz

# Grant lifetime caps per action, in seconds.
ttl_caps := {
	"k8s.scale": 300,
	"db.query": 120,
	"diag.echo": 60,
}

# Namespaces and databases whose changes need a human's approval.
production_names := {"prod", "production"}

# The decision document (see policies/README.md).
decision := {
	"allow": true,
	"reasons": [],
	"max_ttl_seconds": ttl_caps[input.action],
	"scopes": grant.scopes,
	"require_approval": grant.require_approval,
	"runner": {"network": {"mode": "none"}},
} if {
	# contract_ok and authenticated, inline (each rule evaluated costs).
	input.contract_version == 1
	is_string(input.agent.id)
	input.agent.id != ""
	grant
} else := {
	"allow": false,
	"reasons": refusal_reasons,
	"max_ttl_seconds": 0,
	"scopes": [],
	"require_approval": require_approval,
	"runner": {"network": {"mode": "none"}},
}

refusal_reasons := sort(deny) if {
	count(deny) > 0
} else := ["no rule permits this request"]

# Whether a refused request would have needed approval (a permitted one gets it from `grant`).
default require_approval := false

require_approval if {
	input.action == "k8s.scale"
	k8s_target.namespace in production_names
}

require_approval if {
	input.action == "db.query"
	db_target in production_names
}

# ---------------------------------------------------------------------------------------------
# Checks shared by every action.

contract_ok if input.contract_version == 1

authenticated if {
	is_string(input.agent.id)
	input.agent.id != ""
}

deny contains sprintf("unsupported contract_version %v", [input.contract_version]) if {
	not contract_ok
}

deny contains "the request carries no authenticated agent" if not authenticated

deny contains sprintf("unknown action \"%v\"", [input.action]) if not ttl_caps[input.action]

# Each action's reasons, built only for that action.
deny contains reason if {
	input.action == "k8s.scale"
	some reason in k8s_deny
}

deny contains reason if {
	input.action == "db.query"
	some reason in db_deny
}

deny contains reason if {
	input.action == "diag.echo"
	some reason in diag_deny
}

# ---------------------------------------------------------------------------------------------
# k8s.scale: resource k8s:<namespace>/deployments/<name>, params {"replicas": int}; agents whose
# attributes.namespaces list the namespace, up to data's max_replicas, within business hours.

grant := {
	"scopes": [concat("", ["k8s:", namespace, ":deployments/", name, ":patch"])],
	"require_approval": namespace in production_names,
} if {
	input.action == "k8s.scale"

	# k8s_target, inline (see there)
	resource := input.resource
	is_string(resource)
	startswith(resource, "k8s:")
	[namespace, "deployments", name] := split(substring(resource, 4, -1), "/")
	namespace != ""
	trim(namespace, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
	trim(namespace, "-") == namespace
	name != ""
	trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-.") == ""
	trim(name, "-.") == name

	# namespace_granted
	namespaces := input.agent.attributes.namespaces
	is_array(namespaces)
	namespace in namespaces

	# replicas_valid, within the configured limit
	replicas := input.params.replicas
	is_number(replicas)
	replicas == round(replicas)
	replicas >= 0
	max_replicas := data.agent_gateway.limits.max_replicas
	is_number(max_replicas)
	replicas <= max_replicas

	# business_hours_configured and within_business_hours
	hours := data.agent_gateway.business_hours
	is_number(hours.start_hour)
	is_number(hours.end_hour)
	[hour, _, _] := time.clock(time.parse_rfc3339_ns(input.request_time))
	hours.start_hour <= hour
	hour < hours.end_hour
}

# The resource's namespace and name (for explanations; `grant` repeats these checks inline),
# checked with string builtins rather than a regex (cheaper in regorus); they accept exactly
# the language of
# ^k8s:[a-z0-9]([-a-z0-9]*[a-z0-9])?/deployments/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$
k8s_target := {"namespace": namespace, "name": name} if {
	input.action == "k8s.scale"
	resource := input.resource
	is_string(resource)
	startswith(resource, "k8s:")
	[namespace, "deployments", name] := split(substring(resource, 4, -1), "/")

	# Each part is non-empty, made of lower-case letters, digits and its separators, and
	# starts and ends with a letter or digit.
	namespace != ""
	trim(namespace, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
	trim(namespace, "-") == namespace
	name != ""
	trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-.") == ""
	trim(name, "-.") == name
}

# The request hour (UTC), from input.request_time (RFC 3339).
# (Indexing a call's result directly, `time.clock(...)[0]`, is several times slower in regorus
# than destructuring it.)
request_hour := hour if {
	input.action == "k8s.scale"
	[hour, _, _] := time.clock(time.parse_rfc3339_ns(input.request_time))
}

# The explanations: one reason per failed condition of the k8s.scale grant.

namespace_granted if {
	is_array(input.agent.attributes.namespaces)
	k8s_target.namespace in input.agent.attributes.namespaces
}

replicas_valid if {
	replicas := input.params.replicas
	is_number(replicas)
	replicas == round(replicas)
	replicas >= 0
}

business_hours_configured if {
	is_number(data.agent_gateway.business_hours.start_hour)
	is_number(data.agent_gateway.business_hours.end_hour)
}

within_business_hours if {
	data.agent_gateway.business_hours.start_hour <= request_hour
	request_hour < data.agent_gateway.business_hours.end_hour
}

k8s_deny contains "resource must be k8s:<namespace>/deployments/<name>" if not k8s_target

k8s_deny contains sprintf("agent may not act in namespace \"%v\"", [k8s_target.namespace]) if {
	not namespace_granted
}

k8s_deny contains "params.replicas must be a non-negative integer" if not replicas_valid

k8s_deny contains sprintf("replicas %v exceeds the limit of %v", [input.params.replicas, data.agent_gateway.limits.max_replicas]) if {
	replicas_valid
	input.params.replicas > data.agent_gateway.limits.max_replicas
}

k8s_deny contains "data.agent_gateway.limits.max_replicas is not configured" if {
	not is_number(data.agent_gateway.limits.max_replicas)
}

k8s_deny contains "request_time is missing or not RFC 3339" if not request_hour

k8s_deny contains sprintf("outside business hours: %v:00 UTC is not in [%v:00, %v:00)", [request_hour, data.agent_gateway.business_hours.start_hour, data.agent_gateway.business_hours.end_hour]) if {
	not within_business_hours
}

k8s_deny contains "data.agent_gateway.business_hours is not configured" if {
	not business_hours_configured
}

# ---------------------------------------------------------------------------------------------
# db.query: resource db:<database>, params {"sql": string}; read-only SQL for db-readers.

db_target := trim_prefix(input.resource, "db:") if {
	input.action == "db.query"
	is_string(input.resource)
	regex.match(`^db:[A-Za-z0-9_-]+$`, input.resource)
}

# The SQL, upper-cased and trimmed, so the checks below are case-insensitive.
normalized_sql := upper(trim_space(input.params.sql)) if {
	input.action == "db.query"
	is_string(input.params.sql)
}

# Statements that write, change schema, change privileges or escape the read-only path. A
# keyword inside a string literal also matches: a false deny is the safe direction.
write_keywords := `\b(INSERT|UPDATE|DELETE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|MERGE|UPSERT|REPLACE|COPY|CALL|EXEC|EXECUTE|DO|INTO|SET|RESET|LOCK|VACUUM|ANALYZE|REINDEX|CLUSTER|REFRESH|COMMENT|PREPARE|DEALLOCATE|LISTEN|NOTIFY|LOAD|IMPORT|ATTACH|DETACH|PRAGMA|BEGIN|COMMIT|ROLLBACK|SAVEPOINT)\b`

sql_starts_read_only if regex.match(`^(SELECT|WITH)\b`, normalized_sql)

sql_chains_statements if regex.match(`;\s*\S`, normalized_sql)

sql_write_keyword := keyword if {
	[keyword] := regex.find_n(write_keywords, normalized_sql, 1)
}

db_reader if {
	input.action == "db.query"
	input.agent.attributes.role == "db-reader"
}

grant := {
	"scopes": [concat("", ["db:", db_target, ":select"])],
	"require_approval": db_target in production_names,
} if {
	input.action == "db.query"
	db_target
	db_reader
	sql_starts_read_only
	not sql_chains_statements
	not sql_write_keyword
}

db_deny contains "resource must be db:<database>" if not db_target

db_deny contains "agent role must be db-reader" if not db_reader

db_deny contains "params.sql must be a string" if not normalized_sql

db_deny contains "SQL must start with SELECT or WITH" if {
	normalized_sql
	not sql_starts_read_only
}

db_deny contains "SQL must be a single statement" if sql_chains_statements

db_deny contains sprintf("SQL contains the non-read-only keyword %v", [sql_write_keyword])

# ---------------------------------------------------------------------------------------------
# diag.echo: resource diag:<anything>, params {"message": string}; any authenticated agent.

diag_request_valid if {
	input.action == "diag.echo"
	is_string(input.resource)
	startswith(input.resource, "diag:")
	is_string(input.params.message)
}

grant := {"scopes": ["diag:echo"], "require_approval": false} if {
	input.action == "diag.echo"
	diag_request_valid
}

diag_deny contains "diag.echo needs resource diag:<anything> and a string params.message" if {
	not diag_request_valid
}
