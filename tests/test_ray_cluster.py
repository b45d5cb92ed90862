"""A machine of the Ray cluster lost mid-job (ray.cluster_utils.Cluster: a head and two worker
nodes, one actor each, on this machine): its job is made again on the other node, nothing twice."""

import threading
import time

import pytest

from pipeline import config
from pipeline.content import Content
from pipeline.studio import Studio
from tests.conftest import FAST_TOML, real_drafts

# health checks every 0.5 s: a silent node is noticed in seconds (Ray's default: 15 s and more)
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEALTH})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_a_node_lost_mid_variation_has_its_job_made_again_on_another(nodes, tmp_path, tiny):
    cluster, workers = nodes
    real_drafts(tmp_path, tiny, 1)
    content = Content(tmp_path / "content")
    (draft,) = content.drafts()
    (draft.folder / "seed.txt").write_text("count = 4")
    path = tmp_path / "ray.toml"
    path.write_text(FAST_TOML.replace("[run]\n", f'[run]\nray_address = "{cluster.address}"\nray_workers = 2\n'))
    studio = Studio(config.load(path), content)
    studio.start()
    studio.wait_for_workers()
    by_node = {w.node: w for w in studio.workers}
    assert len(by_node) == 2  # one actor on each worker node
    loop = threading.Thread(target=studio.run, kwargs={"once": True, "drafting": False})
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while not all(w.job is not None for w in studio.workers):  # both actors at work on a variation
            assert time.monotonic() < deadline and loop.is_alive()
            time.sleep(0.01)
        lost = next(n for n in workers if n.node_id in by_node)
        cluster.remove_node(lost)  # the machine is gone, mid-job
        loop.join(timeout=300)
    finally:
        studio.stopping = True
        loop.join(timeout=60)
        studio.close()
    assert [v.index for v in content.read_work(draft.id).variations] == [1, 2, 3, 4]
    assert by_node[lost.node_id].deaths == 1  # noticed, its job given to the other node
    survivor = next(w for node, w in by_node.items() if node != lost.node_id)
    assert survivor.done >= 3  # its own, the lost one's, and the rest
    assert sorted(p.name for p in content.work_folder(draft.id).glob("?.png")) == ["1.png", "2.png", "3.png", "4.png"]
