//! embjob's integration tests: one binary, one module per area. They read like the specification of the tool.

mod support;

mod architecture;
mod backend_ops;
mod bow_parity;
mod bow_unicode;
mod cache;
mod config_errors;
mod documents;
mod encoder;
mod finetune;
mod finetune_job;
mod finetune_mlm;
mod finetune_mlm_job;
mod finetune_ops;
mod first_run;
mod fuzz;
mod generated_jobs;
mod gpu;
mod handoff;
mod input_errors;
mod input_files;
mod inspect;
mod model;
mod model_gradients;
mod outputs;
mod pca_parity;
mod pca_properties;
mod reliability;
mod report;
mod shards;
