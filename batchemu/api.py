"""The Batch REST API as one `App`: the route table (like moto's ``urls.py``) and its handlers.

Guarantees: every route maps a verb and URL template to one handler method; handlers live in one mixin
per resource (`api_pools`, `api_jobs`, `api_tasks`, `api_files`, `api_control`) over the shared plumbing
of `api_core`, and only parse requests and serialise what engine methods return.
"""
from __future__ import annotations

from .api_control import ControlApiMixin
from .api_core import AppCore
from .api_files import FilesApiMixin
from .api_jobs import JobsApiMixin
from .api_pools import PoolsApiMixin
from .api_tasks import TasksApiMixin
from .engine import Engine
from .routing import Router

ROUTES = (
    # pools
    ("POST", "/pools", "create_pool"),
    ("GET", "/pools", "list_pools"),
    ("GET", "/pools/{poolId}", "get_pool"),
    ("HEAD", "/pools/{poolId}", "pool_exists"),
    ("PATCH", "/pools/{poolId}", "patch_pool"),
    ("DELETE", "/pools/{poolId}", "delete_pool"),
    ("POST", "/pools/{poolId}/updateproperties", "replace_pool"),
    ("POST", "/pools/{poolId}/resize", "resize_pool"),
    ("POST", "/pools/{poolId}/stopresize", "stop_resize"),
    ("POST", "/pools/{poolId}/enableautoscale", "enable_autoscale"),
    ("POST", "/pools/{poolId}/disableautoscale", "disable_autoscale"),
    ("POST", "/pools/{poolId}/evaluateautoscale", "evaluate_autoscale"),
    ("GET", "/pools/{poolId}/nodes", "list_nodes"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}", "get_node"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files", "list_node_files"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files/{path}", "get_node_file"),
    ("HEAD", "/pools/{poolId}/nodes/{nodeId}/files/{path}", "node_file_props"),
    ("DELETE", "/pools/{poolId}/nodes/{nodeId}/files/{path}", "delete_node_file"),
    ("GET", "/nodecounts", "node_counts"),
    # jobs
    ("POST", "/jobs", "create_job"),
    ("GET", "/jobs", "list_jobs"),
    ("GET", "/jobs/{jobId}", "get_job"),
    ("PATCH", "/jobs/{jobId}", "patch_job"),
    ("PUT", "/jobs/{jobId}", "replace_job"),
    ("DELETE", "/jobs/{jobId}", "delete_job"),
    ("POST", "/jobs/{jobId}/disable", "disable_job"),
    ("POST", "/jobs/{jobId}/enable", "enable_job"),
    ("POST", "/jobs/{jobId}/terminate", "terminate_job"),
    ("GET", "/jobs/{jobId}/taskcounts", "task_counts"),
    ("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus", "prep_status"),
    # job schedules cannot be created (see NOT_EMULATED), so none exists: the reads say so
    ("GET", "/jobschedules", "list_empty"),
    ("GET", "/jobschedules/{id}", "schedule_not_found"),
    ("HEAD", "/jobschedules/{id}", "schedule_not_found"),
    ("GET", "/jobschedules/{id}/jobs", "schedule_not_found"),
    # tasks
    ("POST", "/jobs/{jobId}/tasks", "create_task"),
    ("GET", "/jobs/{jobId}/tasks", "list_tasks"),
    ("POST", "/jobs/{jobId}/addtaskcollection", "add_collection"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}", "get_task"),
    ("PUT", "/jobs/{jobId}/tasks/{taskId}", "update_task"),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}", "delete_task"),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", "terminate_task"),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate", "reactivate_task"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/subtasksinfo", "subtasks"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files", "list_files"),
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files/{path}", "get_file"),
    ("HEAD", "/jobs/{jobId}/tasks/{taskId}/files/{path}", "file_props"),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}/files/{path}", "delete_file"),
)

# The rest of the Batch REST API (api-version 2025-06-01: every operation of the data-plane spec has a route
# here or above): each answers 400 NotSupportedByEmulator naming its operation id, rather than a 404
# InvalidUri that would read as a wrong URL.
NOT_EMULATED = (
    ("GET", "/applications", "Applications_ListApplications"),
    ("GET", "/applications/{applicationId}", "Applications_GetApplication"),
    ("GET", "/poolusagemetrics", "Pools_ListPoolUsageMetrics"),
    ("GET", "/supportedimages", "Pools_ListSupportedImages"),
    ("POST", "/pools/{poolId}/removenodes", "Pools_RemoveNodes"),
    ("POST", "/jobschedules", "JobSchedules_CreateJobSchedule"),
    ("PATCH", "/jobschedules/{jobScheduleId}", "JobSchedules_UpdateJobSchedule"),
    ("PUT", "/jobschedules/{jobScheduleId}", "JobSchedules_ReplaceJobSchedule"),
    ("DELETE", "/jobschedules/{jobScheduleId}", "JobSchedules_DeleteJobSchedule"),
    ("POST", "/jobschedules/{jobScheduleId}/disable", "JobSchedules_DisableJobSchedule"),
    ("POST", "/jobschedules/{jobScheduleId}/enable", "JobSchedules_EnableJobSchedule"),
    ("POST", "/jobschedules/{jobScheduleId}/terminate", "JobSchedules_TerminateJobSchedule"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/users", "Nodes_CreateNodeUser"),
    ("PUT", "/pools/{poolId}/nodes/{nodeId}/users/{userName}", "Nodes_ReplaceNodeUser"),
    ("DELETE", "/pools/{poolId}/nodes/{nodeId}/users/{userName}", "Nodes_DeleteNodeUser"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/reboot", "Nodes_RebootNode"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/start", "Nodes_StartNode"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/reimage", "Nodes_ReimageNode"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/deallocate", "Nodes_DeallocateNode"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/disablescheduling", "Nodes_DisableNodeScheduling"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/enablescheduling", "Nodes_EnableNodeScheduling"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/remoteloginsettings", "Nodes_GetNodeRemoteLoginSettings"),
    ("POST", "/pools/{poolId}/nodes/{nodeId}/uploadbatchservicelogs", "Nodes_UploadNodeLogs"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/extensions", "Nodes_ListNodeExtensions"),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/extensions/{extensionName}", "Nodes_GetNodeExtension"),
)

# the emulator's own control plane (no authentication)
CONTROL_ROUTES = (
    ("GET", "/_emulator/health", "health"),
    ("GET", "/_emulator/stats", "get_stats"),
    ("POST", "/_emulator/stats/reset", "reset_stats"),
    ("GET", "/_emulator/faults", "list_faults"),
    ("GET", "/_emulator/storage-outage", "get_storage_outage"),
    ("POST", "/_emulator/storage-outage", "start_storage_outage"),
    ("DELETE", "/_emulator/storage-outage", "end_storage_outage"),
    ("GET", "/_emulator/quotas", "get_quotas"),
    ("PUT", "/_emulator/quotas", "replace_quotas"),
    ("POST", "/_emulator/quotas", "update_quotas"),
    ("GET", "/_emulator/spot-capacity", "get_spot_capacity"),
    ("POST", "/_emulator/spot-capacity", "set_spot_capacity"),
    ("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/preempt", "fault_preempt"),
    ("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/fail-next", "fault_fail_next"),
    ("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/slow", "fault_slow"),
    ("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/fail-upload", "fault_fail_upload"),
    ("DELETE", "/_emulator/jobs/{jobId}/tasks/{taskId}/faults", "fault_clear"),
)


class App(PoolsApiMixin, JobsApiMixin, TasksApiMixin, FilesApiMixin, ControlApiMixin, AppCore):
    def __init__(self, engine: Engine, account: str, key: str):
        super().__init__(engine, account, key)
        self.router = Router()
        for method, template, name in ROUTES:
            self.router.add(method, template, getattr(self, name))
        for method, template, operation in NOT_EMULATED:
            self.router.add(method, template, self.not_emulated(operation, f"{method} {template}"))
        self.control = Router()
        for method, template, name in CONTROL_ROUTES:
            self.control.add(method, template, getattr(self, name))
