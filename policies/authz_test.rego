# Unit tests of the reference policy. Run with `opa test policies/` or, through the embedded
# engine, with `cargo test -p gateway-opa` (tests/rego_unit.rs).
package agent_gateway.authz_test

import data.agent_gateway.authz

deployer := {
	"id": "agent:deployer",
	"owner": "team-platform",
	"attributes": {"namespaces": ["team-a", "prod"]},
	"auth": {"method": "static_key", "key_id": "k1"},
}

db_reader := {
	"id": "agent:analyst",
	"owner": "team-data",
	"attributes": {"role": "db-reader"},
	"auth": {"method": "static_key", "key_id": "k2"},
}

request(agent, action, resource, params) := {
	"contract_version": 1,
	"agent": agent,
	"action": action,
	"resource": resource,
	"params": params,
	"intent": "test",
	"requested_ttl_seconds": 600,
	"request_time": "2025-01-06T10:30:00Z",
	"correlation_id": "0193f5d2-0000-7000-8000-000000000000",
	"context": {},
}

scale(ns, replicas) := request(deployer, "k8s.scale", sprintf("k8s:%v/deployments/web", [ns]), {"replicas": replicas})

query(sql) := request(db_reader, "db.query", "db:analytics", {"sql": sql})

# --- k8s.scale -------------------------------------------------------------------------------

test_scale_in_own_namespace_allowed if {
	d := authz.decision with input as scale("team-a", 3)
	d.allow == true
	d.reasons == []
	d.max_ttl_seconds == 300
	d.scopes == ["k8s:team-a:deployments/web:get", "k8s:team-a:deployments/web/scale:patch"]
	d.require_approval == false
	d.runner == {"network": {"mode": "none"}}
}

test_scale_to_limit_allowed if {
	d := authz.decision with input as scale("team-a", 10)
	d.allow
}

test_scale_over_limit_denied if {
	d := authz.decision with input as scale("team-a", 11)
	not d.allow
	d.reasons == ["replicas 11 exceeds the limit of 10"]
	d.scopes == []
}

test_scale_limit_comes_from_data if {
	d := authz.decision with input as scale("team-a", 4)
		with data.agent_gateway.limits.max_replicas as 3
	not d.allow
	d.reasons == ["replicas 4 exceeds the limit of 3"]
}

# A namespaces attribute that is not a list grants nothing (and is not an evaluation error).
test_scale_with_namespaces_not_a_list_denied if {
	agent := object.union(deployer, {"attributes": {"namespaces": "team-a"}})
	d := authz.decision with input as request(agent, "k8s.scale", "k8s:team-a/deployments/web", {"replicas": 1})
	not d.allow
	d.reasons == ["agent may not act in namespace \"team-a\""]
}

test_scale_other_namespace_denied if {
	d := authz.decision with input as scale("team-b", 1)
	not d.allow
	d.reasons == ["agent may not act in namespace \"team-b\""]
}

test_scale_fractional_or_negative_replicas_denied if {
	every r in [1.5, -1, "3", null] {
		d := authz.decision with input as scale("team-a", r)
		not d.allow
		"params.replicas must be a non-negative integer" in d.reasons
	}
}

test_scale_bad_resource_denied if {
	d := authz.decision with input as request(deployer, "k8s.scale", "k8s:team-a/pods/web", {"replicas": 1})
	not d.allow
	d.reasons == ["resource must be k8s:<namespace>/deployments/<name>"]
}

test_scale_outside_business_hours_denied if {
	d := authz.decision with input as scale("team-a", 3)
		with data.agent_gateway.business_hours as {"start_hour": 11, "end_hour": 17}
	not d.allow
	d.reasons == ["outside business hours: 10:00 UTC is not in [11:00, 17:00)"]
}

test_scale_inside_business_hours_allowed if {
	d := authz.decision with input as scale("team-a", 3)
		with data.agent_gateway.business_hours as {"start_hour": 9, "end_hour": 17}
	d.allow
}

test_scale_bad_request_time_denied if {
	d := authz.decision with input as object.union(scale("team-a", 3), {"request_time": "yesterday"})
	not d.allow
	"request_time is missing or not RFC 3339" in d.reasons
}

test_scale_in_production_needs_approval if {
	d := authz.decision with input as scale("prod", 2)
	d.allow
	d.require_approval == true
}

test_kubernetes_actions_may_reach_the_configured_api_server_only if {
	d := authz.decision with input as scale("team-a", 3)
		with data.agent_gateway.kubernetes.api_server as "127.0.0.1:6443"
	d.runner == {"network": {"mode": "allowlist", "destinations": ["127.0.0.1:6443"]}}
	q := authz.decision with input as query("SELECT 1")
		with data.agent_gateway.kubernetes.api_server as "127.0.0.1:6443"
	q.runner == {"network": {"mode": "none"}}
}

test_rollout_restart_allowed_with_get_and_patch if {
	d := authz.decision with input as request(deployer, "k8s.rollout_restart", "k8s:team-a/deployments/web", {})
	d.allow
	d.max_ttl_seconds == 300
	d.scopes == ["k8s:team-a:deployments/web:get", "k8s:team-a:deployments/web:patch"]
	d.require_approval == false
}

test_rollout_restart_in_a_foreign_namespace_denied if {
	d := authz.decision with input as request(deployer, "k8s.rollout_restart", "k8s:team-b/deployments/web", {})
	not d.allow
	d.reasons == ["agent may not act in namespace \"team-b\""]
}

test_rollout_restart_in_production_needs_approval if {
	d := authz.decision with input as request(deployer, "k8s.rollout_restart", "k8s:prod/deployments/web", {})
	d.allow
	d.require_approval == true
}

# --- db.query --------------------------------------------------------------------------------

test_select_allowed if {
	d := authz.decision with input as query("select id, total from orders where day = '2025-01-06'")
	d.allow
	d.max_ttl_seconds == 120
	d.scopes == ["pg:analytics:public.customers:select", "pg:analytics:public.orders:select"]
	d.require_approval == false
}

test_database_without_tables_denied if {
	d := authz.decision with input as request(db_reader, "db.query", "db:scratch", {"sql": "SELECT 1"})
	not d.allow
	d.reasons == ["database \"scratch\" has no readable_tables configured"]
}

test_database_name_must_be_an_identifier if {
	d := authz.decision with input as request(db_reader, "db.query", "db:my-db", {"sql": "SELECT 1"})
	not d.allow
	d.reasons == ["resource must be db:<database>"]
}

test_cte_select_allowed if {
	d := authz.decision with input as query("WITH t AS (SELECT 1 AS x) SELECT x FROM t;")
	d.allow
}

test_writes_denied if {
	every sql in [
		"DELETE FROM orders",
		"update orders set total = 0",
		"SELECT * INTO backup FROM orders",
		"WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
		"DROP TABLE orders",
	] {
		d := authz.decision with input as query(sql)
		not d.allow
	}
}

test_write_keyword_named if {
	d := authz.decision with input as query("SELECT 1 FROM t FOR UPDATE")
	d.reasons == ["SQL contains the non-read-only keyword UPDATE"]
}

test_stacked_statements_denied if {
	d := authz.decision with input as query("SELECT 1; SELECT 2")
	not d.allow
	d.reasons == ["SQL must be a single statement"]
}

test_non_select_denied if {
	d := authz.decision with input as query("EXPLAIN SELECT 1")
	not d.allow
	"SQL must start with SELECT or WITH" in d.reasons
}

test_non_reader_denied if {
	agent := object.union(db_reader, {"attributes": {"role": "db-admin"}})
	d := authz.decision with input as request(agent, "db.query", "db:analytics", {"sql": "SELECT 1"})
	not d.allow
	d.reasons == ["agent role must be db-reader"]
}

test_production_database_needs_approval if {
	d := authz.decision with input as request(db_reader, "db.query", "db:production", {"sql": "SELECT 1"})
	d.allow
	d.require_approval == true
}

# --- diag.echo and general rules -------------------------------------------------------------

test_echo_allowed_for_any_agent if {
	d := authz.decision with input as request(db_reader, "diag.echo", "diag:smoke", {"message": "hi"})
	d.allow
	d.max_ttl_seconds == 60
	d.scopes == ["diag:echo"]
}

test_echo_needs_message if {
	d := authz.decision with input as request(db_reader, "diag.echo", "diag:smoke", {})
	not d.allow
}

test_unknown_action_denied if {
	d := authz.decision with input as request(deployer, "k8s.delete", "k8s:team-a/deployments/web", {})
	not d.allow
	d.reasons == ["unknown action \"k8s.delete\""]
	d.max_ttl_seconds == 0
}

test_unknown_contract_version_denied if {
	d := authz.decision with input as object.union(request(db_reader, "diag.echo", "diag:x", {"message": "hi"}), {"contract_version": 2})
	not d.allow
	d.reasons == ["unsupported contract_version 2"]
}

test_missing_agent_denied if {
	d := authz.decision with input as object.remove(request(db_reader, "diag.echo", "diag:x", {"message": "hi"}), ["agent"])
	not d.allow
	"the request carries no authenticated agent" in d.reasons
}

# --- catalog listing (visible_actions) -------------------------------------------------------

listing(agent) := {
	"contract_version": 1,
	"agent": agent,
	"actions": ["db.query", "diag.echo", "k8s.scale", "not.in.policy"],
	"request_time": "2025-01-06T10:30:00Z",
	"context": {},
}

test_deployer_sees_scale_and_echo if {
	authz.visible_actions == {"diag.echo", "k8s.scale"} with input as listing(deployer)
}

test_reader_sees_query_and_echo if {
	authz.visible_actions == {"db.query", "diag.echo"} with input as listing(db_reader)
}

test_agent_without_attributes_sees_echo_only if {
	agent := {"id": "agent:plain", "owner": "x", "attributes": {}, "auth": {"method": "static_key", "key_id": "k3"}}
	authz.visible_actions == {"diag.echo"} with input as listing(agent)
}

test_listing_shows_only_listed_actions if {
	authz.visible_actions == {"diag.echo"} with input as object.union(listing(deployer), {"actions": ["diag.echo"]})
}

test_listing_of_unknown_contract_is_empty if {
	count(authz.visible_actions) == 0 with input as object.union(listing(deployer), {"contract_version": 2})
}

test_listing_without_agent_is_empty if {
	count(authz.visible_actions) == 0 with input as object.remove(listing(deployer), ["agent"])
}
