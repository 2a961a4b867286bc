//! Every integration test, in one binary: a module per area, the shared control plane and
//! stack in `support`. `cargo test --test integration operator::` runs one area;
//! docs/testing.md says what each area covers.

mod support;

mod access;
mod agent;
mod audit;
mod broker;
mod chart;
mod chart_run;
mod crd_file;
mod dashboards;
mod dev_stack;
mod exec_policy;
mod gateway;
mod gitops;
mod media;
mod models;
mod node_agents;
mod operator;
mod operator_restart;
mod packaging;
mod polling;
mod real_node;
mod reminders;
mod steady_state;
mod telegram_standin;
mod users;
mod web_fetch;
