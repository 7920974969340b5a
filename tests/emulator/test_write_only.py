"""Registry passwords (and other write-only properties) are accepted but never sent back, as by the service."""
from __future__ import annotations

from azure.batch import models as m

from .conftest import uid

SECRET = "s3cret-registry-password"


def registry() -> m.ContainerRegistryReference:
    return m.ContainerRegistryReference(registry_server="myregistry.azurecr.io", username="puller", password=SECRET)


def container_settings() -> m.BatchTaskContainerSettings:
    return m.BatchTaskContainerSettings(image_name="myregistry.azurecr.io/app:1", registry=registry())


def pool_spec(**kwargs) -> dict:
    """What a pool and an auto pool specification share: registries in three places, all held (0 nodes)."""
    return dict(
        vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher="p", offer="o", sku="s"),
            node_agent_sku_id="batch.node.ubuntu 22.04",
            container_configuration=m.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=["myregistry.azurecr.io/app:1"],
                container_registries=[registry()])),
        start_task=m.BatchStartTask(command_line="true", container_settings=container_settings()),
        user_accounts=[m.UserAccount(name="someone", password=SECRET)],
        **kwargs)


class Bodies:
    """Every raw response body the SDK received (through its own raw_response_hook)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, response) -> None:
        self.seen.append(response.http_response.text())


def assert_never_returned(bodies: Bodies, calls: int) -> None:
    assert len(bodies.seen) >= calls
    for body in bodies.seen:
        assert SECRET not in body
        assert '"password"' not in body


def test_pool_get_and_list_never_return_the_password(client):
    pool_id = uid("pool")
    client.create_pool(m.BatchPoolCreateOptions(id=pool_id, **pool_spec()))
    try:
        bodies = Bodies()
        pool = client.get_pool(pool_id, raw_response_hook=bodies)
        listed = [p for p in client.list_pools(raw_response_hook=bodies) if p.id == pool_id]
        assert_never_returned(bodies, 2)
        for p in (pool, listed[0]):
            config = p.virtual_machine_configuration.container_configuration
            assert config.container_registries[0].username == "puller"  # the rest is kept
            assert config.container_registries[0].password is None
            assert p.start_task.container_settings.registry.password is None
            assert p.user_accounts[0].name == "someone" and p.user_accounts[0].password is None
        by_password = client.list_pools(filter=f"userAccounts/password eq '{SECRET}'")
        assert [p.id for p in by_password if p.id == pool_id] == []
    finally:
        client.begin_delete_pool(pool_id, polling_interval=1).result()


def test_job_auto_pool_and_task_never_return_the_password(client):
    job_id = uid("job")
    auto_pool = m.BatchAutoPoolSpecification(
        auto_pool_id_prefix="wo", pool_lifetime_option="job", pool=m.BatchPoolSpecification(**pool_spec()))
    client.create_job(m.BatchJobCreateOptions(
        id=job_id, pool_info=m.BatchPoolInfo(auto_pool_specification=auto_pool),
        job_preparation_task=m.BatchJobPreparationTask(command_line="true", container_settings=container_settings()),
        job_release_task=m.BatchJobReleaseTask(command_line="true", container_settings=container_settings())))
    try:
        client.create_task(job_id, m.BatchTaskCreateOptions(id="t", command_line="true",
                                                            container_settings=container_settings()))
        bodies = Bodies()
        job = client.get_job(job_id, raw_response_hook=bodies)
        jobs = [j for j in client.list_jobs(raw_response_hook=bodies) if j.id == job_id]
        task = client.get_task(job_id, "t", raw_response_hook=bodies)
        tasks = list(client.list_tasks(job_id, raw_response_hook=bodies))
        pool = client.get_pool(job.execution_info.pool_id, raw_response_hook=bodies)
        assert_never_returned(bodies, 5)

        for j in (job, jobs[0]):
            spec = j.pool_info.auto_pool_specification.pool
            assert spec.virtual_machine_configuration.container_configuration.container_registries[0].password is None
            assert spec.user_accounts[0].password is None
            assert j.job_preparation_task.container_settings.registry.password is None
            assert j.job_release_task.container_settings.registry.username == "puller"
            assert j.job_release_task.container_settings.registry.password is None
        for t in (task, tasks[0]):
            assert t.container_settings.registry.registry_server == "myregistry.azurecr.io"
            assert t.container_settings.registry.password is None
        assert pool.virtual_machine_configuration.container_configuration.container_registries[0].password is None
        # a filter on the password is no oracle either
        assert list(client.list_tasks(job_id, filter=f"containerSettings/registry/password eq '{SECRET}'")) == []
    finally:
        client.begin_delete_job(job_id, polling_interval=1).result()
