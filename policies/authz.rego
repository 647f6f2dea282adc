# Reference policy of agent-gateway (policy contract version 1).
#
# The gateway queries data.agent_gateway.authz.decision with the input document described in
# policies/README.md and expects the decision document described there. Rego v1 syntax: the
# same file runs unchanged on an OPA 1.x server and in the embedded engine (regorus).
#
# Style: an action is allowed only when a positive `permitted` rule matches AND no `deny`
# rule fires. `deny` rules exist to explain; they never grant anything, so a check that
# evaluates to undefined (missing field, wrong type) can only ever deny.
package agent_gateway.authz

# Contract versions this policy understands; anything else is denied.
contract_versions := {1}

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
	"allow": allow,
	"reasons": reasons,
	"max_ttl_seconds": max_ttl_seconds,
	"scopes": scopes,
	"require_approval": require_approval,
	"runner": {"network": {"mode": "none"}},
}

default allow := false

allow if {
	contract_ok
	authenticated
	permitted
	count(deny) == 0
}

reasons := sort(deny) if count(deny) > 0

reasons := ["no rule permits this request"] if {
	count(deny) == 0
	not allow
}

reasons := [] if allow

default max_ttl_seconds := 0

max_ttl_seconds := ttl_caps[input.action] if allow

default scopes := []

default require_approval := false

require_approval if k8s_target.namespace in production_names

require_approval if db_target in production_names

# ---------------------------------------------------------------------------------------------
# Checks shared by every action.

contract_ok if input.contract_version in contract_versions

authenticated if {
	is_string(input.agent.id)
	input.agent.id != ""
}

known_action if ttl_caps[input.action]

deny contains sprintf("unsupported contract_version %v", [input.contract_version]) if {
	not contract_ok
}

deny contains "the request carries no authenticated agent" if not authenticated

deny contains sprintf("unknown action \"%v\"", [input.action]) if not known_action

# The request hour (UTC), from input.request_time (RFC 3339).
request_hour := time.clock([time.parse_rfc3339_ns(input.request_time), "UTC"])[0]

# ---------------------------------------------------------------------------------------------
# k8s.scale: resource k8s:<namespace>/deployments/<name>, params {"replicas": int}.

k8s_resource_pattern := `^k8s:[a-z0-9]([-a-z0-9]*[a-z0-9])?/deployments/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$`

k8s_target := {"namespace": parts[0], "name": parts[2]} if {
	input.action == "k8s.scale"
	is_string(input.resource)
	regex.match(k8s_resource_pattern, input.resource)
	parts := split(trim_prefix(input.resource, "k8s:"), "/")
}

namespace_granted if {
	some namespace in input.agent.attributes.namespaces
	namespace == k8s_target.namespace
}

replicas_valid if {
	replicas := input.params.replicas
	is_number(replicas)
	replicas == round(replicas)
	replicas >= 0
}

replicas_within_limit if {
	replicas_valid
	input.params.replicas <= data.agent_gateway.limits.max_replicas
}

within_business_hours if {
	hours := data.agent_gateway.business_hours
	hours.start_hour <= request_hour
	request_hour < hours.end_hour
}

permitted if {
	input.action == "k8s.scale"
	k8s_target
	namespace_granted
	replicas_within_limit
	within_business_hours
}

scopes := [sprintf("k8s:%v:deployments/%v:patch", [k8s_target.namespace, k8s_target.name])] if {
	allow
	input.action == "k8s.scale"
}

deny contains "resource must be k8s:<namespace>/deployments/<name>" if {
	input.action == "k8s.scale"
	not k8s_target
}

deny contains sprintf("agent may not act in namespace \"%v\"", [k8s_target.namespace]) if {
	not namespace_granted
}

deny contains "params.replicas must be a non-negative integer" if {
	input.action == "k8s.scale"
	not replicas_valid
}

deny contains sprintf("replicas %v exceeds the limit of %v", [input.params.replicas, data.agent_gateway.limits.max_replicas]) if {
	input.action == "k8s.scale"
	replicas_valid
	input.params.replicas > data.agent_gateway.limits.max_replicas
}

deny contains "data.agent_gateway.limits.max_replicas is not configured" if {
	input.action == "k8s.scale"
	not is_number(data.agent_gateway.limits.max_replicas)
}

deny contains "request_time is missing or not RFC 3339" if {
	input.action == "k8s.scale"
	not request_hour
}

deny contains sprintf("outside business hours: %v:00 UTC is not in [%v:00, %v:00)", [request_hour, hours.start_hour, hours.end_hour]) if {
	input.action == "k8s.scale"
	hours := data.agent_gateway.business_hours
	not within_business_hours
}

deny contains "data.agent_gateway.business_hours is not configured" if {
	input.action == "k8s.scale"
	not is_number(data.agent_gateway.business_hours.start_hour)
}

deny contains "data.agent_gateway.business_hours is not configured" if {
	input.action == "k8s.scale"
	not is_number(data.agent_gateway.business_hours.end_hour)
}

# ---------------------------------------------------------------------------------------------
# db.query: resource db:<database>, params {"sql": string}; read-only SQL for db-readers.

db_target := trim_prefix(input.resource, "db:") if {
	input.action == "db.query"
	is_string(input.resource)
	regex.match(`^db:[A-Za-z0-9_-]+$`, input.resource)
}

# The SQL, upper-cased and trimmed, so the checks below are case-insensitive.
normalized_sql := upper(trim_space(input.params.sql)) if is_string(input.params.sql)

# Statements that write, change schema, change privileges or escape the read-only path. A
# keyword inside a string literal also matches: a false deny is the safe direction.
write_keywords := `\b(INSERT|UPDATE|DELETE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|MERGE|UPSERT|REPLACE|COPY|CALL|EXEC|EXECUTE|DO|INTO|SET|RESET|LOCK|VACUUM|ANALYZE|REINDEX|CLUSTER|REFRESH|COMMENT|PREPARE|DEALLOCATE|LISTEN|NOTIFY|LOAD|IMPORT|ATTACH|DETACH|PRAGMA|BEGIN|COMMIT|ROLLBACK|SAVEPOINT)\b`

sql_starts_read_only if regex.match(`^(SELECT|WITH)\b`, normalized_sql)

sql_chains_statements if regex.match(`;\s*\S`, normalized_sql)

sql_write_keyword := regex.find_n(write_keywords, normalized_sql, 1)[0]

sql_read_only if {
	sql_starts_read_only
	not sql_chains_statements
	not sql_write_keyword
}

db_reader if input.agent.attributes.role == "db-reader"

permitted if {
	input.action == "db.query"
	db_target
	db_reader
	sql_read_only
}

scopes := [sprintf("db:%v:select", [db_target])] if {
	allow
	input.action == "db.query"
}

deny contains "resource must be db:<database>" if {
	input.action == "db.query"
	not db_target
}

deny contains "agent role must be db-reader" if {
	input.action == "db.query"
	not db_reader
}

deny contains "params.sql must be a string" if {
	input.action == "db.query"
	not normalized_sql
}

deny contains "SQL must start with SELECT or WITH" if {
	normalized_sql
	input.action == "db.query"
	not sql_starts_read_only
}

deny contains "SQL must be a single statement" if {
	input.action == "db.query"
	sql_chains_statements
}

deny contains sprintf("SQL contains the non-read-only keyword %v", [sql_write_keyword]) if {
	input.action == "db.query"
}

# ---------------------------------------------------------------------------------------------
# diag.echo: resource diag:<anything>, params {"message": string}; any authenticated agent.

diag_request_valid if {
	is_string(input.resource)
	startswith(input.resource, "diag:")
	is_string(input.params.message)
}

permitted if {
	input.action == "diag.echo"
	diag_request_valid
}

scopes := ["diag:echo"] if {
	allow
	input.action == "diag.echo"
}

deny contains "diag.echo needs resource diag:<anything> and a string params.message" if {
	input.action == "diag.echo"
	not diag_request_valid
}
